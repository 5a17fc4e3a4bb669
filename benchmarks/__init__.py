"""On-demand benchmarks of logstream against a raw-socket trio baseline (never run by pytest).

Run ``python -m benchmarks [--quick] [--runs N] [--json FILE] [SCENARIO...]`` from the
repository root; scenarios: ``ingest``, ``fanout``, ``catchup``, ``storm``, ``memory`` (default:
all). Results are discussed in ``docs/benchmarks.md``.

Every figure comes from real processes over real sockets: the server under test
(``logstream run``/``serve``, or ``benchmarks/baseline_server.py``), the job
(``sample_jobs/firehose.py``), and one or two load-client processes (``loadclient.py``).
"""
