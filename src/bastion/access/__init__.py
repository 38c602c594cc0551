"""Just-in-time access: requests, approvals (two-person rule), time-bound grants."""
