import numpy as np
import pytest
import torch

from pgolf.data import (HEADER_BYTES, DistributedTokenLoader, ShardError, list_shards, load_tokens, read_header,
                        read_shard, write_shard)


def test_roundtrip(tmp_path):
    toks = np.random.default_rng(0).integers(0, 65536, size=1000)
    p = tmp_path / "fineweb_train_000000.bin"
    write_shard(p, toks)
    assert p.stat().st_size == HEADER_BYTES + 2 * 1000
    assert read_header(p) == 1000
    np.testing.assert_array_equal(read_shard(p), toks)
    np.testing.assert_array_equal(np.asarray(read_shard(p, mmap=True)), toks)
    header = np.fromfile(p, dtype="<i4", count=256)
    assert header[0] == 20240520 and header[1] == 1 and header[2] == 1000 and not header[3:].any()


def _corrupt(tmp_path, mutate):
    p = tmp_path / "fineweb_val_000000.bin"
    write_shard(p, np.arange(100))
    raw = bytearray(p.read_bytes())
    p.write_bytes(mutate(raw))
    return p


@pytest.mark.parametrize("mutate,needle", [
    (lambda b: b"\x00" * 4 + b[4:], "bad magic"),
    (lambda b: b[:4] + (7).to_bytes(4, "little") + b[8:], "version 7"),
    (lambda b: b[:-10], "truncated"),
    (lambda b: b + b"\x00\x00", "trailing"),
    (lambda b: b[:100], "truncated header"),
])
def test_corrupt_shards_name_the_file(tmp_path, mutate, needle):
    p = _corrupt(tmp_path, mutate)
    with pytest.raises(ShardError) as e:
        read_shard(p)
    assert str(p) in str(e.value) and needle in str(e.value)


def test_empty_glob_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="no shards match"):
        list_shards(tmp_path, "fineweb_train_*.bin")


def test_write_rejects_out_of_range(tmp_path):
    with pytest.raises(ValueError, match="uint16"):
        write_shard(tmp_path / "x.bin", [70000])


def test_loader_splits_ranks_disjointly(tmp_path):
    toks = np.arange(10_000) % 60000
    write_shard(tmp_path / "fineweb_train_000000.bin", toks[:6000])
    write_shard(tmp_path / "fineweb_train_000001.bin", toks[6000:])
    files = list_shards(tmp_path, "fineweb_train_*.bin")
    seq, local = 16, 64
    # two micro-steps on 1 rank see exactly what one step on 2 ranks sees
    one = DistributedTokenLoader(files, 0, 1, torch.device("cpu"))
    a = [one.next_batch(local, seq) for _ in range(2)]
    r0 = DistributedTokenLoader(files, 0, 2, torch.device("cpu")).next_batch(local, seq)
    r1 = DistributedTokenLoader(files, 1, 2, torch.device("cpu")).next_batch(local, seq)
    assert torch.equal(a[0][0], r0[0]) and torch.equal(a[1][0], r1[0])
    assert torch.equal(a[0][1], r0[1]) and torch.equal(a[1][1], r1[1])
    assert not set(r0[0].flatten().tolist()) & set(r1[0].flatten().tolist())
    # targets are inputs shifted by one
    assert torch.equal(r0[0].flatten()[1:], r0[1].flatten()[:-1])


def test_loader_wraps_around(tmp_path):
    write_shard(tmp_path / "fineweb_train_000000.bin", np.arange(100))
    ld = DistributedTokenLoader(list_shards(tmp_path, "fineweb_train_*.bin"), 0, 1, torch.device("cpu"))
    for _ in range(5):
        x, y = ld.next_batch(40, 8)
        assert x.shape == (5, 8)


def test_load_tokens_concatenates(tmp_path):
    write_shard(tmp_path / "fineweb_val_000000.bin", [1, 2, 3])
    write_shard(tmp_path / "fineweb_val_000001.bin", [4, 5])
    t = load_tokens(list_shards(tmp_path, "fineweb_val_*.bin"))
    assert t.tolist() == [1, 2, 3, 4, 5]
