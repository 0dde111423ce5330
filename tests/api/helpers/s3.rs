//! A real S3-compatible server for the storage tests.

use super::fixtures::files_under;

/// A real S3-compatible server (s3s-fs, which checks SigV4 signatures and
/// presigned-URL expiry) on a loopback port, storing into a temp directory.
pub struct S3Server {
    child: std::process::Child,
    pub root: tempfile::TempDir,
    pub endpoint: String,
}

pub const S3_BUCKET: &str = "docflow-test";
pub const S3_ACCESS_KEY: &str = "docflowtestkey";
pub const S3_SECRET_KEY: &str = "docflowtestsecret0123456789";

impl S3Server {
    pub fn start() -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join(S3_BUCKET)).expect("bucket dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let binary = std::env::var("S3S_FS_BIN").unwrap_or_else(|_| "s3s-fs".to_owned());
        let child = std::process::Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(root.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {binary} (cargo install s3s-fs@0.14.1 --locked --features binary): {e}")
            });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "s3s-fs did not start");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Self {
            child,
            root,
            endpoint: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Overrides that point an app at this server.
    pub fn app_config(&self) -> Vec<(&'static str, String)> {
        vec![
            ("STORAGE_URL", format!("s3://{S3_BUCKET}")),
            ("S3_ENDPOINT_URL", self.endpoint.clone()),
            ("S3_REGION", "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY.to_owned()),
        ]
    }

    /// The bucket's objects, as s3s-fs keeps them on disk.
    pub fn objects(&self) -> Vec<String> {
        files_under(&self.root.path().join(S3_BUCKET))
            .into_iter()
            // s3s-fs keeps metadata and in-progress uploads beside objects.
            .filter(|path| path.starts_with("documents/") && !path.contains(".s3s"))
            .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
