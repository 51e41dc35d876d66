"""ShowMe's training rewards and the frozen critics they run: depth and edge networks."""
