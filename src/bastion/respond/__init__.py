"""Respond: locks now; playbooks, actions and incidents in a later issue."""
