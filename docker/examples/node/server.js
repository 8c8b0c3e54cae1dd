// A tiny app for the enclave: listens on 127.0.0.1:8008 (the agent forwards decrypted requests here) and
// uses the agent's local API on 127.0.0.1:9999 to encrypt a value.
import http from 'node:http';

const PORT = Number(process.env.PORT ?? 8008);

const server = http.createServer(async (req, res) => {
  if (req.url === '/health') return res.end('ok');
  if (req.url === '/encrypt-demo') {
    const r = await fetch('http://127.0.0.1:9999/encrypt', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ card: '4242424242424242' }),
    });
    res.setHeader('content-type', 'application/json');
    return res.end(await r.text());
  }
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ hello: 'from the enclave', path: req.url }));
});

server.listen(PORT, '127.0.0.1', () => console.log(`listening on 127.0.0.1:${PORT}`));
// Finish what is in flight on SIGTERM (the agent has already drained its own connections).
process.on('SIGTERM', () => server.close(() => process.exit(0)));
