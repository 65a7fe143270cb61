"""What the machine decides: device, threads, subnormal floats, writable cache directories."""
