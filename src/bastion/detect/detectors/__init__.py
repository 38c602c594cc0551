"""The shipped detectors, one small module each (named after the detection id), and the
pipeline the engine runs them in. Adding a detector: write a module with a class following
:class:`bastion.detect.detector.Detector`, add it to :func:`default_detectors`, give it unit
tests that show it fires on its pattern and stays quiet on its false-positive traps.
"""

from __future__ import annotations

from pathlib import Path

from bastion.config.models import BastionConfig

from ..detector import Detector
from ..sigma import SigmaDetector, load_rules
from .d01_new_environment import NewEnvironment
from .d02_token_family import TokenFamilyMoved
from .d03_impossible_travel import ImpossibleTravel
from .d04_credential_sharing import CredentialSharing
from .d05_enumeration import Enumeration
from .d06_output_volume import OutputVolume
from .d07_distillation import Distillation
from .d08_off_hours import OffHours
from .d09_contract_and_dormancy import ContractAndDormancy
from .d10_content import ContentSignals
from .d11_origin import UndeclaredOrigin
from .d12_org_wide import OrgWide
from .d13_control_plane import ControlPlane
from .d14_honeytoken import HoneytokenPresented
from .d15_client_fingerprint import ClientFingerprint


def default_detectors(config: BastionConfig, *, base_dir: Path = Path()) -> list[Detector]:
    """A fresh set of every shipped streaming detector (each with empty state), plus the
    operator's Sigma rules from ``detection.rules`` (read from files: relative paths are taken
    from ``base_dir``, the directory of bastion.yaml; a bad rule is a ConfigError)."""
    detectors: list[Detector] = [TokenFamilyMoved()]
    detectors += [NewEnvironment(), ImpossibleTravel(), CredentialSharing(), OffHours()]
    detectors += [ClientFingerprint(), OrgWide()]
    detectors += [Enumeration(), OutputVolume(), Distillation(), ContractAndDormancy()]
    detectors += [ControlPlane()]
    detectors += [ContentSignals(), UndeclaredOrigin(), HoneytokenPresented()]
    if config.detection.rules:
        detectors.append(SigmaDetector(load_rules(config.detection.rules, base_dir)))
    return detectors
