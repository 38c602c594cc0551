"""The admin REST API (thin: authentication, Cedar, then the shared services)."""
