// Loaded with `node --require` before server-everything's HTTP modes, which call
// `app.listen(PORT)` with no host (every interface): binds them to 127.0.0.1 instead.
const net = require("net");
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  const port = args[0];
  if (typeof port === "number" || (typeof port === "string" && /^\d+$/.test(port))) {
    const rest = args.slice(1).filter((a) => typeof a === "function");
    return listen.call(this, Number(port), "127.0.0.1", ...rest);
  }
  return listen.apply(this, args);
};
