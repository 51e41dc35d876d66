"""The showme world-model node (placeholder until the node lands)."""


def main() -> int:
    """Run the node."""
    raise SystemExit("showme_node is not implemented yet")
