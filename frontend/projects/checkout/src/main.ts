import { provideZonelessChangeDetection } from '@angular/core';
import { bootstrapApplication } from '@angular/platform-browser';
import { provideRouter, withComponentInputBinding } from '@angular/router';

import { CheckoutRoot } from './app/root';
import { AuthenticatePage } from './app/authenticate-page';
import { CheckoutPage } from './app/checkout-page';
import { MissingPage } from './app/missing-page';

bootstrapApplication(CheckoutRoot, {
  providers: [
    provideZonelessChangeDetection(),
    provideRouter(
      [
        { path: ':paymentId', component: CheckoutPage },
        { path: ':paymentId/authenticate', component: AuthenticatePage },
        { path: '**', component: MissingPage },
      ],
      withComponentInputBinding(),
    ),
  ],
}).catch((error: unknown) => console.error(error));
