"""Operator detections written as Sigma rules, run by Bastion's own streaming engine.

pySigma parses the rules (``load.py``); Bastion compiles each detection rule's condition into a
predicate over :class:`~bastion.detect.observation.Observation` fields (``match.py``, field list in
``fields.py``) and evaluates the correlation types ``event_count``, ``value_count`` and
``value_sum`` as bounded windows per group in event time (``correlate.py``). The whole rule set
is one detector, id ``S``, whose findings are ``S:<rule name>`` (``detector.py``). Nothing is
converted to a SIEM query.
"""

from __future__ import annotations

from .detector import SigmaDetector
from .fields import FIELDS
from .load import load_rules
from .match import MODIFIERS
from .rules import RuleSet

__all__ = ["FIELDS", "MODIFIERS", "RuleSet", "SigmaDetector", "load_rules"]
