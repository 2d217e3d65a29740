//! safetensors I/O.
