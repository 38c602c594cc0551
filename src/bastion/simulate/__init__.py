"""``bastion simulate``: seeded, labelled traffic through a real Bastion, scored.

A benign population (internal staff, three vendor orgs, a batch service; time zones, working
hours, VPN egress changes, travel, on-call nights, new hires) and injected attack scenarios, each
tagged with the detections expected to catch it and its ATT&CK / ATLAS techniques, run against
Bastion in-process on a simulated clock. The report says, per scenario, whether it was detected
and how fast (in events and seconds from the first malicious call), and how many findings fell
on benign principals per 1,000 principal-days.

``world.py`` (orgs, networks, people), ``files.py`` (bastion.yaml and the IP databases),
``population.py`` (benign behaviour), ``scenarios.py`` (attacks), ``runner.py`` (drives the
traffic), ``report.py`` (scoring and the table), ``upstream.py`` (the stand-in model server).
"""
