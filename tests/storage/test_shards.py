import json
import subprocess
import sys

import pytest

from fluxsr_core.atomic import TMP_MARK
from storage.manifest import Manifest, manifest_digest, read_manifest, verify_files, write_manifest
from storage.shards import ShardError, check_shard, read_samples, sidecar_path, write_shard


def _samples(n, size=1000):
    return [{"__key__": f"{i:04d}", "bin": bytes([i % 256]) * size, "json": json.dumps({"i": i}).encode()} for i in range(n)]


def test_write_shard_is_confirmed_and_readable(tmp_path):
    path = tmp_path / "s-000000.tar"
    entry = write_shard(path, _samples(3))
    assert entry.records == 3 and check_shard(path) == entry
    got = read_samples(path)
    assert [s["__key__"] for s in got] == ["0000", "0001", "0002"] and got[1]["bin"] == b"\x01" * 1000
    assert not [p for p in tmp_path.iterdir() if TMP_MARK in p.name]


def test_shards_are_byte_reproducible(tmp_path):
    a = write_shard(tmp_path / "a.tar", _samples(4))
    b = write_shard(tmp_path / "b.tar", _samples(4))
    assert a.sha256 == b.sha256


def test_truncated_corrupt_and_unconfirmed_shards_are_detected(tmp_path):
    path = tmp_path / "s.tar"
    entry = write_shard(path, _samples(3))
    data = path.read_bytes()
    path.write_bytes(data[:-700])
    with pytest.raises(ShardError, match="truncated"):
        check_shard(path)
    path.write_bytes(data[:100] + b"X" + data[101:])
    with pytest.raises(ShardError, match="sha256"):
        check_shard(path, entry)
    path.write_bytes(data)
    sidecar_path(path).unlink()
    with pytest.raises(ShardError, match="did not finish"):
        check_shard(path)


def test_reading_a_non_tar_names_the_file(tmp_path):
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"this is not a tar archive at all" * 10)
    with pytest.raises(ShardError, match="bad.tar"):
        read_samples(bad)


def test_failed_write_leaves_nothing(tmp_path):
    def boom():
        yield _samples(1)[0]
        raise RuntimeError("killed mid-shard")

    with pytest.raises(RuntimeError):
        write_shard(tmp_path / "s.tar", boom())
    assert list(tmp_path.iterdir()) == []


def test_full_disk_leaves_no_half_written_shard(tmp_path):
    """A real write failure (file-size limit, like a full disk) removes the temp file and names the shard."""
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))\n"
        "from storage.shards import write_shard\n"
        "try:\n"
        f"    write_shard({str(tmp_path / 's.tar')!r}, [{{'__key__': '0', 'bin': b'x' * 1_000_000}}])\n"
        "except OSError as e:\n"
        "    print('ERR', e); sys.exit(3)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "s.tar" in r.stdout and "free space" in r.stdout
    assert list(tmp_path.iterdir()) == []


def test_manifest_round_trip_verify_and_digest(tmp_path):
    entry = write_shard(tmp_path / "s.tar", _samples(2))
    m = Manifest(stage="pairs", key="k", config={"a": 1}, files=[entry])
    write_manifest(tmp_path, m)
    back = read_manifest(tmp_path)
    assert back.records == 2 and back.files == [entry]
    assert verify_files(tmp_path, back) == []
    d1 = manifest_digest(tmp_path)
    write_manifest(tmp_path, Manifest(stage="pairs", key="k", config={"a": 1}, files=[entry]))  # new timestamp
    assert manifest_digest(tmp_path) == d1
    (tmp_path / "s.tar").write_bytes(b"")
    assert "truncated" in verify_files(tmp_path, back)[0]


def test_missing_manifest_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="has not finished"):
        read_manifest(tmp_path)
