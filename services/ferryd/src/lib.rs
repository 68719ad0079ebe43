//! ferryd: runs ferry's services, the embedded default in one process, and the demo
