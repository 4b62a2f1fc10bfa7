"""mmoe.data.read_records: every record of every shard, in a fixed order."""

import tensorflow as tf

from mmoe import data


def _write_shards(tmp_path, shards: int, records: int) -> list[str]:
    paths = []
    for s in range(shards):
        path = str(tmp_path / f"train-{s:05d}-of-{shards:05d}.tfrecord.gz")
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for r in range(records):
                writer.write(f"{s}:{r}".encode())
        paths.append(path)
    return paths


def test_read_records_returns_every_record_in_blocks_of_the_shards_in_turn(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "RECORD_BLOCK", 4)
    paths = _write_shards(tmp_path, shards=3, records=10)
    order = [r.decode() for r in data.read_records(paths).as_numpy_iterator()]
    assert sorted(order) == sorted(f"{s}:{r}" for s in range(3) for r in range(10))
    # blocks of 4 from shard 0, 1, 2, then the next block of each; short last blocks
    assert order[:12] == [f"{s}:{r}" for s in range(3) for r in range(4)]
    assert order[-2:] == ["2:8", "2:9"]
    assert [r.decode() for r in data.read_records(paths).as_numpy_iterator()] == order


def test_read_records_reads_at_most_READERS_shards_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "RECORD_BLOCK", 2)
    monkeypatch.setattr(data, "READERS", 2)
    paths = _write_shards(tmp_path, shards=3, records=4)
    order = [r.decode() for r in data.read_records(paths).as_numpy_iterator()]
    # shards 0 and 1 alternate by blocks; shard 2 starts when shard 0 is done
    assert order == ["0:0", "0:1", "1:0", "1:1", "0:2", "0:3", "1:2", "1:3", "2:0", "2:1", "2:2", "2:3"]
