"""The networks: the score U-Net and the CycleGAN generators and discriminators, and the packaged demo model."""
