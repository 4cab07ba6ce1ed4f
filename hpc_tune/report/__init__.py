"""What the user reads after the array: the collected summary, trials table and the analysis of the study."""
