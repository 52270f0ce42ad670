GET /app.js HTTP/1.1
Host: 127.0.0.1
Authorization: Bearer adminsecret-0123456789abcdef

