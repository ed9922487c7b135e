"""Wrappers: the GQN representation as observation, and imagination pictures."""

from gqn_env.wrappers.representation import GQNRepresentation, GQNRepresentationVector, RepresentationState

__all__ = ["GQNRepresentation", "GQNRepresentationVector", "RepresentationState"]
