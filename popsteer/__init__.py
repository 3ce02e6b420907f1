"""PopSteer."""
