"""A real S3 endpoint on loopback (moto's server) for tests of `pyarrow.fs` URI results roots."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

S3_ENV = {"AWS_ACCESS_KEY_ID": "regene-test", "AWS_SECRET_ACCESS_KEY": "regene-test", "AWS_DEFAULT_REGION": "us-east-1"}


@contextmanager
def local_s3(bucket: str) -> Iterator[dict[str, str]]:
    """Serve S3 on 127.0.0.1 with `bucket` created; yield the environment that points clients at it.

    pyarrow, boto3 and Ray workers started from this process all read AWS_ENDPOINT_URL.
    """
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {**S3_ENV, "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        boto3.client("s3").create_bucket(Bucket=bucket)
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()
