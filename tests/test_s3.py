"""Object storage: inputs and outputs on S3, against a real S3-compatible server (moto)."""

from __future__ import annotations

import socket

import pyarrow.dataset as ds
import pytest

from segflow.cli import main, run_label

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")


@pytest.fixture
def s3(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
    }.items():
        monkeypatch.setenv(key, value)
    import fsspec
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    fs = fsspec.filesystem("s3", client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
    fs.mkdir("inbox")
    fs.mkdir("labels")
    try:
        yield fs
    finally:
        import httpx

        httpx.post(f"{endpoint}/moto-api/reset")  # moto keeps buckets in-process
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()


def test_label_from_and_to_s3(s3, clip, image, tmp_path, monkeypatch, model_calls):
    monkeypatch.setenv("SEGFLOW_CACHE", str(tmp_path / "cache"))
    s3.put(str(clip), "inbox/videos/a.mp4")
    s3.put(str(image), "inbox/videos/b.png")
    settings = dict(model="test-color", frames_per_range=5)
    result = run_label(["s3://inbox/videos/"], "s3://labels/run1", **settings)
    assert [r["status"] for r in result["inputs"]] == ["ok", "ok"]
    table = ds.dataset("labels/run1", filesystem=s3, format="parquet").to_table().to_pandas()
    assert set(table["source"]) == {"s3://inbox/videos/a.mp4", "s3://inbox/videos/b.png"}
    assert len(table) == 36 + 3
    assert s3.exists("labels/run1/.segflow/manifest.json")

    calls = model_calls()
    again = run_label(["s3://inbox/videos/*.mp4"], "s3://labels/run1", **settings)
    assert again["inputs"][0]["up_to_date"] and model_calls() == calls
    # A rerun with another confidence prunes the earlier cache files, and only those.
    run_label(["s3://inbox/videos/"], "s3://labels/run1", **settings, confidence=0.8)
    cache = [p for p in s3.find("labels/run1/.segflow/cache") if p.endswith(".pq")]
    # raw, kept, poly, track of the video's 3 ranges; raw, kept, track of the image's shard (its label file
    # holds its polygons)
    assert len(cache) == 4 * 3 + 3 and not any("/poly/shards/" in p for p in cache)
    same = run_label(["s3://inbox/videos/"], "s3://labels/run1", **settings, confidence=0.8)
    assert all(r["up_to_date"] for r in same["inputs"]) and model_calls() == calls


def test_missing_bucket_and_object_are_refused(s3, clip, tmp_path, capsys):
    assert main(["label", str(clip), "--out", "s3://no-such-bucket/x", "--model", "test-color"]) == 2
    assert "bucket does not exist" in capsys.readouterr().err
    assert main(["label", "s3://inbox/missing.mp4", "--out", str(tmp_path / "o"), "--model", "test-color"]) == 2
    assert "no such object" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
