"""The analytical roofline / SweetSpot model, its fitted constants and the sweet spot."""
