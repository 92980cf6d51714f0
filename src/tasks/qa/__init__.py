"""What VQA, GQA and easy-VQA share: the question reader and soft-score dataset (`data`), the
answer-head model (`model`) and the task with its per-dataset specs (`task`). The entry points
are `tasks.vqa.main` and `tasks.gqa.main`."""
