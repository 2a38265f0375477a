//! One error type for the whole engine: every failure names what is wrong.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// No adapter / device, or the device lacks something the engine needs.
    #[error("GPU: {0}")]
    Gpu(String),
    /// A checkpoint, VAE or LoRA file that cannot be used; names the file and tensor.
    #[error("{0}")]
    Weights(String),
    /// Bad user input (sizes, prompts, options).
    #[error("invalid input: {0}")]
    Input(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The GPU produced non-finite values (a precision bug, never a black image).
    #[error("numerical failure: {0}")]
    Numeric(String),
    #[error("cancelled")]
    Cancelled,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
