//! What the tests share, by concern: the app under test and the requests a
//! user makes of it ([`app`]), the files they upload ([`fixtures`]), a real
//! S3-compatible server ([`s3`]), a live-status stream reader ([`sse`]), and
//! real `docflow` processes ([`process`]).

pub mod app;
pub mod fixtures;
pub mod process;
pub mod s3;
pub mod sse;

pub use app::*;
pub use fixtures::*;
pub use process::*;
pub use s3::*;
pub use sse::*;
