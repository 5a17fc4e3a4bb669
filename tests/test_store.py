"""The data directory: log files, sparse index, torn records, run locks, retention."""

from __future__ import annotations

import random
import sys
import threading
from pathlib import Path

from logstream import logformat, sse
from logstream.job import Job
from logstream.ring import Block
from logstream.store import DataDir, LogReader, LogWriter, hold_run_lock, write_job


def write_lines(path: Path, count: int, per_block: int = 1000, width: int = 40) -> None:
    writer = LogWriter(path)
    blocks = []
    for first in range(1, count + 1, per_block):
        last = min(count, first + per_block - 1)
        lines = [f"line {seq:07d} ".ljust(width, "x") for seq in range(first, last + 1)]
        payload = sse.encode_time(first) + sse.encode_lines(first, lines, stderr=first % 3 == 0)
        blocks.append(Block(first, last, payload, first))
    writer.write(blocks)
    writer.close(sse.encode_end("succeeded", 0))


def read_all(reader: LogReader, cursor: int) -> list[int]:
    seen: list[int] = []
    offset = -1
    while True:
        chunk, offset, first = reader.read_after(cursor, offset, max_bytes=64 * 1024)
        if not chunk.payload:
            return seen
        assert first == cursor + 1
        seen += [seq for seq, _stream, _text in logformat.iter_lines(chunk.payload)]
        cursor = chunk.last


def test_resume_from_any_point_on_disk_gives_each_line_once(tmp_path: Path) -> None:
    write_lines(tmp_path, 20_000)
    reader = LogReader(tmp_path)
    assert reader.last_seq() == 20_000
    for cursor in [0, 1, 999, 1000, 1001, 12_345, 19_999, *random.sample(range(20_000), 20)]:
        assert read_all(reader, cursor) == list(range(cursor + 1, 20_001))
    assert read_all(reader, 20_000) == []


def test_end_record_is_never_served_as_lines(tmp_path: Path) -> None:
    write_lines(tmp_path, 10)
    reader = LogReader(tmp_path)
    assert reader.end() == ("succeeded", 0)
    chunk, _offset, _first = reader.read_after(0)
    assert b"event: end" not in chunk.payload


def test_torn_last_record_is_dropped(tmp_path: Path) -> None:
    writer = LogWriter(tmp_path)
    writer.write([Block(1, 2, sse.encode_lines(1, ["one", "two"]), 0)])
    with open(tmp_path / "log", "ab") as log:
        log.write(b"id: 3\ndata: thr")  # a crash in the middle of a write
    reader = LogReader(tmp_path)
    assert reader.last_seq() == 2
    assert read_all(reader, 0) == [1, 2]


def test_index_entry_past_the_end_is_ignored(tmp_path: Path) -> None:
    write_lines(tmp_path, 5000)
    with open(tmp_path / "index", "ab") as index:
        index.write(logformat.pack_index_entry(6000, 10**9, 0))
        index.write(b"\x01\x02")  # torn entry
    assert read_all(LogReader(tmp_path), 4990) == list(range(4991, 5001))


def test_missing_lines_are_reported_not_skipped(tmp_path: Path) -> None:
    writer = LogWriter(tmp_path)
    writer.write([Block(50, 51, sse.encode_lines(50, ["a", "b"]), 0)])
    chunk, _offset, first = LogReader(tmp_path).read_after(10)
    assert first == 50 and chunk.last == 51


def test_plain_text_keeps_carriage_returns(tmp_path: Path) -> None:
    payload = sse.encode_lines(1, ["a\rb", "<script>"]) + sse.encode_lines(3, ["e"], stderr=True)
    assert logformat.plain_text(payload) == b"a\rb\n<script>\n" + b"e\n"


def test_job_ids_are_unique_time_ordered_and_url_safe(tmp_path: Path) -> None:
    data_dir = DataDir(tmp_path)
    ids = [data_dir.new_job_dir()[0] for _ in range(50)]
    assert len(set(ids)) == 50
    assert ids == sorted(ids)
    assert all(data_dir.job_path(job_id) for job_id in ids)


def test_a_running_job_whose_runner_died_reads_as_interrupted(tmp_path: Path) -> None:
    data_dir = DataDir(tmp_path)
    job_id, path = data_dir.new_job_dir()
    write_job(path, Job(id=job_id, name="x", command=["x"]))
    write_lines(path, 3)
    # Nobody holds the run lock: the runner is gone.
    job = data_dir.read_job(job_id)
    assert job.status == "interrupted" and job.lines == 3 and job.exit_code is None


def test_gc_removes_old_finished_jobs_but_never_a_running_one(tmp_path: Path) -> None:
    data_dir = DataDir(tmp_path)
    made = []
    for status in ["succeeded", "failed", "running", "succeeded"]:
        job_id, path = data_dir.new_job_dir()
        job = Job(id=job_id, name="x", command=["x"], status=status)
        if status == "running":
            lock = hold_run_lock(path)
        write_job(path, job)
        made.append(job_id)
    removed = data_dir.gc(keep_days=None, keep_jobs=1)
    assert sorted(removed) == sorted([made[0], made[1]])
    assert set(data_dir.job_ids()) == {made[2], made[3]}
    del lock


def test_writer_appends_more_blocks_than_one_writev_takes(tmp_path: Path) -> None:
    writer = LogWriter(tmp_path)
    blocks = [Block(seq, seq, sse.encode_lines(seq, [f"line {seq}"]), 0) for seq in range(1, 3001)]
    writer.write(blocks[:2500])
    writer.write(blocks[2500:])
    writer.close(sse.encode_end("succeeded", 0))
    expected = b"".join(block.payload for block in blocks) + sse.encode_end("succeeded", 0)
    assert (tmp_path / "log").read_bytes() == expected


def test_one_reader_shared_by_many_threads_keeps_its_whole_index(tmp_path: Path) -> None:
    # Every client of a job shares one LogReader and reads from a worker thread. Threads that
    # load the index at once must neither drop nor repeat entries, while the log grows.
    writer = LogWriter(tmp_path)
    reader = LogReader(tmp_path)
    per_block, blocks = 500, 60
    width = 200  # 100 KB blocks: more than one index entry (64 KiB) per block
    errors: list[BaseException] = []
    written = threading.Event()

    def write() -> None:
        for first in range(1, per_block * blocks, per_block):
            lines = [f"line {seq}".ljust(width, "x") for seq in range(first, first + per_block)]
            payload = sse.encode_lines(first, lines)
            writer.write([Block(first, first + per_block - 1, payload, first)])
        written.set()

    def read(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while not written.is_set():
                on_disk = reader.last_seq()
                cursor = rng.randrange(0, on_disk + 1)
                chunk, _offset, first = reader.read_after(cursor, max_bytes=4096)
                if chunk.payload:
                    assert first == cursor + 1
                    assert next(logformat.iter_lines(chunk.payload))[0] == cursor + 1
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: races show up
    try:
        threads = [threading.Thread(target=read, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        write()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        sys.setswitchinterval(switch_interval)
    assert not errors
    reader.read_after(0)  # loads whatever index entries are still new
    on_disk = list(logformat.unpack_index((tmp_path / "index").read_bytes()))
    assert reader._entries == on_disk


def test_last_line_is_found_behind_a_record_longer_than_the_first_look(tmp_path: Path) -> None:
    writer = LogWriter(tmp_path)
    progress = "12%\r" * 40_000  # one 160,000-character line: a record of over 400 KB
    writer.write([Block(1, 2, sse.encode_lines(1, ["short", progress]), 0)])
    writer.close(sse.encode_end("succeeded", 0))
    assert LogReader(tmp_path).last_seq() == 2
