"""Publishing: the outreach policy, the lists a retention team works from, their exports and report."""
