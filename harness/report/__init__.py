"""How the harness shows what it found, below every layer that prints (commands, the run summary,
store repair, the leaderboard): it imports nothing of the harness."""
