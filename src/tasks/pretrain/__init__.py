"""Pre-training of LXMERT-S: LXMERT's recipe and the multi-stage (MSP) reconstruction."""
