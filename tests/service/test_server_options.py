from __future__ import annotations

import os

from service.cpus import cpu_quota, usable_cpus
from service.grpc_api.server import grpc_options
from service.settings import ServerSettings


def test_cgroup_v2_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cpu_quota(tmp_path) == 1.5
    assert usable_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu_quota(tmp_path) is None
    assert usable_cpus(tmp_path) == len(os.sched_getaffinity(0))


def test_cgroup_v1_quota(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_quota(tmp_path) is None
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    assert cpu_quota(tmp_path) == 0.5 and usable_cpus(tmp_path) == 1


def test_no_cgroup_files_means_no_quota(tmp_path):
    assert cpu_quota(tmp_path) is None


def test_http2_limits_are_server_options():
    assert "grpc.max_concurrent_streams" not in dict(grpc_options(ServerSettings()))
    options = dict(grpc_options(ServerSettings(max_concurrent_streams=7, max_ping_strikes=3)))
    assert options["grpc.max_concurrent_streams"] == 7
    assert options["grpc.http2.max_ping_strikes"] == 3
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 10_000


def test_max_connection_age_is_a_server_option():
    assert not any("max_connection_age" in k for k, _ in grpc_options(ServerSettings()))
    options = dict(grpc_options(ServerSettings(max_connection_age_s=300, drain_grace_s=10)))
    assert options["grpc.max_connection_age_ms"] == 300_000
    assert options["grpc.max_connection_age_grace_ms"] == 10_000
