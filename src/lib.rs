//! fuselage
