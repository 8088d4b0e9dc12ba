"""FOCUS conformance: export focus_costs from the demo and every fixture, run the official validator on it."""
