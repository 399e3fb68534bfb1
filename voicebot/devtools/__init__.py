"""Developer tools, not needed to answer a call: call tapes (tape/), dialing a server from the
command line (dial) and a simulated Twilio that drives the server as Twilio does (twilio_sim)."""
