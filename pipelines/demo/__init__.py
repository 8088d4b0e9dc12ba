"""A fictional AI company's month of provider exports and telemetry, generated from a seed."""
