"""The engine room: inputs, targets, gradients, quadrature, the path engine, noise."""
