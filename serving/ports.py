"""Where the server listens by default: TF Serving's ports, on loopback. Plain constants, so the
command line reads them without importing TensorFlow or grpc."""

DEFAULT_HOST = "127.0.0.1"  # loopback only: pass 0.0.0.0 to serve other machines
DEFAULT_PORT = 8501  # TF Serving's REST port
DEFAULT_GRPC_PORT = 8500  # TF Serving's gRPC port
