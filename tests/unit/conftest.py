"""In-process unit tests of the components that keep time, driven by a FakeClock: no
processes, no sleeps. (Deliberately no fixtures here.)"""
