import { provideZonelessChangeDetection } from '@angular/core';
import { bootstrapApplication } from '@angular/platform-browser';
import { provideRouter, withComponentInputBinding } from '@angular/router';

import { CheckoutRoot } from './app/root';
import { CheckoutPage } from './app/checkout-page';
import { MissingPage } from './app/missing-page';

bootstrapApplication(CheckoutRoot, {
  providers: [
    provideZonelessChangeDetection(),
    provideRouter(
      [
        { path: ':paymentId', component: CheckoutPage },
        { path: '**', component: MissingPage },
      ],
      withComponentInputBinding(),
    ),
  ],
}).catch((error: unknown) => console.error(error));
