def test_seaweedfs_serves_s3(s3_server):
    bucket = s3_server.new_bucket()
    c = s3_server.client()
    c.put_object(Bucket=bucket, Key="a/b.txt", Body=b"hello")
    assert c.get_object(Bucket=bucket, Key="a/b.txt")["Body"].read() == b"hello"
