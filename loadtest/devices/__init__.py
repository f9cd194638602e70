"""Simulated playback devices for locust: ABR, buffer model and the session loop."""
