"""Join: each AuthEvent to the kernel's facts about the TCP connection it arrived on; SYN fingerprints."""
