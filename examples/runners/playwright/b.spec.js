'use strict'
// The request fixture needs no browser.
const { test, expect } = require('@playwright/test')

test('b reaches the app on the port numballoc chose', async ({ request }) => {
  const response = await request.get('/')
  expect(response.ok()).toBe(true)
  expect(await response.text()).toBe(`app on ${process.env.PORT}`)
})
