"""ok_tf: Optimal Kronecker-Sum Approximation of RTRL in TensorFlow 2."""
