"""GAN generators and discriminators with swappable upsamplers, training and sampling."""
