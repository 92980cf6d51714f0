"""A toy task registered from the tests: is a yes/no question about the image answered yes?
It shows what a new task is: this folder, and a `registry.register(ENTRY)` call."""
