"""Examples of programs that consume the showme node's predictions."""
