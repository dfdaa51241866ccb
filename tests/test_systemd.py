"""The unit file passes systemd's own checks; the install script lays out a kiosk."""

import os
import re
import shutil
import subprocess

import pytest

from edge_app.config import PROJECT_ROOT, load_config

UNIT = PROJECT_ROOT / "systemd" / "agecheck.service"
analyze = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(analyze is None, reason="systemd-analyze not installed (Debian package systemd)")


@needs_systemd
def test_unit_exposure_is_at_most_3():
    result = subprocess.run([analyze, "security", "--offline=true", str(UNIT)], capture_output=True, text=True)
    match = re.search(r"Overall exposure level for agecheck.service: ([\d.]+)", result.stdout)
    assert match, result.stdout[-2000:] + result.stderr
    assert float(match.group(1)) <= 3.0


@needs_systemd
def test_unit_verifies_clean_apart_from_the_install_path():
    result = subprocess.run([analyze, "verify", str(UNIT)], capture_output=True, text=True)
    problems = [line for line in result.stderr.splitlines()
                if line.strip() and "/opt/agecheck/venv/bin/agecheck" not in line]
    assert problems == []


def test_unit_runs_the_app_the_way_the_tests_do():
    text = UNIT.read_text()
    for needed in ("Type=notify", "WatchdogSec=", "Restart=on-failure", "DynamicUser=yes", "SupplementaryGroups=video",
                   "DevicePolicy=closed", "DeviceAllow=char-video4linux rw", "CapabilityBoundingSet=\n", "UMask=0077",
                   "ExecReload=/bin/kill -HUP $MAINPID", "--log-format json run --no-display"):
        assert needed in text, needed


@pytest.mark.slow
@pytest.mark.skipif(not (PROJECT_ROOT / "models" / "age_resnet50_int8.json").exists(),
                    reason="the shipped age model is not in models/ yet")
def test_install_script_lays_out_a_kiosk_and_removes_it(tmp_path):
    staged = tmp_path / "root"
    log = tmp_path / "systemctl.log"
    systemctl = tmp_path / "systemctl"  # stands in for the real one: records what it was asked
    systemctl.write_text(f"#!/bin/sh\necho \"$*\" >> {log}\n")
    systemctl.chmod(0o755)
    env = dict(os.environ, DESTDIR=str(staged), SYSTEMCTL=str(systemctl),
               PIP_INSTALL_ARGS="--no-deps")  # the layout is under test here, not the dependencies
    subprocess.run(["bash", str(PROJECT_ROOT / "systemd" / "install.sh")], env=env, check=True, capture_output=True)
    prefix = staged / "opt" / "agecheck"
    assert (prefix / "venv" / "bin" / "agecheck").is_file()
    assert (prefix / "models" / "face_detection_full_range_sparse.tflite").is_file()
    assert (staged / "etc" / "systemd" / "system" / "agecheck.service").read_text() == UNIT.read_text()
    config = staged / "etc" / "agecheck" / "config.toml"
    assert load_config(config).policy.threshold_age == 18
    config.write_text("[policy]\nthreshold_age = 21\n")  # the operator's edit survives a reinstall
    subprocess.run(["bash", str(PROJECT_ROOT / "systemd" / "install.sh")], env=env, check=True, capture_output=True)
    assert "21" in config.read_text()
    assert "enable --now agecheck.service" in log.read_text()
    subprocess.run(["bash", str(PROJECT_ROOT / "systemd" / "install.sh"), "--remove"], env=env, check=True,
                   capture_output=True)
    assert not prefix.exists() and config.exists()
    assert "disable --now agecheck.service" in log.read_text()
