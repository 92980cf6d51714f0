"""The training application: tasks built on the `lxrt` library."""
