"""The Ferryman lab: two Hyper-V Replica sites with VMM behind real WS-Management and PSRP.

The lab stands alone: it imports nothing from the rest of Ferryman.
"""
