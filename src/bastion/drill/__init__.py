"""``bastion drill``: replay the contractor-breach threat model against a running Bastion."""
