"""The first thing a user does: create a bucket, put, get, list, delete."""

import os


def test_put_get_list_delete(s3, bucket):
    payload = os.urandom(3 * 1024 * 1024 + 5)
    s3.put_object(Bucket=bucket, Key="dir/a.bin", Body=payload)
    assert s3.get_object(Bucket=bucket, Key="dir/a.bin")["Body"].read() == payload
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["dir/a.bin"]
    s3.delete_object(Bucket=bucket, Key="dir/a.bin")
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
