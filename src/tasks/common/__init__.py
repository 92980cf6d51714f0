"""What every task shares: arguments, features, the training loop, distributed and precision."""
