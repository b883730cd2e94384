"""Load shapes of the suite (Locust runs a shape on the master or standalone process only)."""
